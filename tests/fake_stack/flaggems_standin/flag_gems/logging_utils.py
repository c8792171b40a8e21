"""Op logging of the flag_gems stand-in: the same format and switches as flag_gems 5.0.2.

With `record=True`, every kernel's `logger.debug("GEMS ...")` becomes one line
`[DEBUG] flag_gems.ops.<module>.<fn>: GEMS <OP ...>` in `path` (default
~/.flaggems/oplist.log; the file is truncated, as the real FileHandler(mode="w") does; its
folder is created if missing). With `once=True` each call site logs once.
"""

import logging
from pathlib import Path


class LogOncePerLocationFilter(logging.Filter):
    def __init__(self):
        super().__init__()
        self.logged_locations = set()

    def filter(self, record):
        key = (record.pathname, record.lineno)
        if key in self.logged_locations:
            return False
        self.logged_locations.add(key)
        return True


def _remove_file_handlers(logger: logging.Logger):
    removed = False
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler) and getattr(h, "_flaggems_owned", False):
            h.close()
            logger.removeHandler(h)
            removed = True
    return removed


def setup_flaggems_logging(path=None, record=True, once=False):
    logger = logging.getLogger("flag_gems")
    if record:
        _remove_file_handlers(logger)
    else:
        return
    filename = Path(path or Path.home() / ".flaggems/oplist.log")
    filename.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(filename, mode="w")
    handler._flaggems_owned = True
    if once:
        handler.addFilter(LogOncePerLocationFilter())
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(name)s.%(funcName)s: %(message)s"))
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False


def teardown_flaggems_logging(logger: logging.Logger | None = None):
    _remove_file_handlers(logger or logging.getLogger("flag_gems"))
