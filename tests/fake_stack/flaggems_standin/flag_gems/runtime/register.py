"""`Register` of the flag_gems stand-in: the real 5.0.2 registrar's logic on the CPU key.

Each (aten op key, kernel function) pair is registered with `lib.impl(key, fn, "CPU")`, `fn`
being the function object defined in `flag_gems.ops.<module>`; exclusion and inclusion match
the kernel's function name (as the real one does; `only_enable` also accepts the op key).
"""

import warnings


class Register:
    reg_key = "CPU"  # the real one asks DeviceDetector for the dispatch key ('CUDA', ...)

    def __init__(
        self,
        config,
        user_include_ops=None,
        user_exclude_ops=None,
        cpp_patched_ops=None,
        lib=None,
        full_config_by_func=None,
    ):
        self.lib = lib
        self.all_ops = []
        self.all_keys = []
        self.full_config_by_func = full_config_by_func
        self.cpp_patched_ops = set(cpp_patched_ops or [])
        if user_include_ops:
            self.include_ops = list(user_include_ops or [])
            self.exclude_ops = []
            self.config = config
            self.extract_include_config()
            self.config = self.include_config
            self.for_each()
        else:
            self.exclude_ops = list(user_exclude_ops or [])
            self.config = config
            self.config_filter()
            self.for_each()

    def extract_include_config(self):
        self.include_config = []
        if self.full_config_by_func:
            for name in self.include_ops:
                for item in self.full_config_by_func.get(name, []):
                    if item[0] not in self.cpp_patched_ops:
                        self.include_config.append((item[0], item[1]))
        else:
            for op_name, func in self.config:
                if func.__name__ in self.include_ops or op_name in self.include_ops:
                    self.include_config.append((op_name, func))
        if not self.include_config:
            warnings.warn(
                "only_enable failed: No op to register. Check if include is correct.",
                stacklevel=2,
            )

    def config_filter(self):
        self.config = [
            (k, f)
            for k, f in self.config
            if f.__name__ not in self.exclude_ops and k not in self.cpp_patched_ops
        ]

    def register_impl(self, key, fn):
        if self.lib is None:
            raise ValueError("Library instance is not provided.")
        self.all_ops.append(fn.__name__)
        self.all_keys.append(key)
        self.lib.impl(key, fn, self.reg_key)

    def for_each(self):
        for key, func in self.config:
            self.register_impl(key, func)

    def get_all_ops(self):
        return self.all_ops

    def get_all_keys(self):
        return self.all_keys

    def get_unused_ops(self):
        return self.exclude_ops

    def get_vendor_name(self):
        return "cpu-standin"

    def get_current_device(self):
        return "cpu"
