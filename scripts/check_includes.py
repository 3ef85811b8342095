#!/usr/bin/env python3
"""Standard headers included where they are used: does every source file that names a
standard-library facility include the header that declares it, itself or through one of the
project's own headers?

    scripts/check_includes.py [ROOT]     # exit 1, naming each file and header, if not

Why: a file that gets <cstdint> only because this machine's <string> happens to include it
builds here and fails on a machine with another libstdc++. That is how the first GPU session
(2026-12-04, docs/gpu-report.md) lost its first build: the GPU image's newer libstdc++ no
longer brought <cstdint> in through <string>. The check reads text, not the compiler's
view: a symbol in a comment is skipped, one in a string literal counts. The table below
names the facilities the project uses; std::move, std::pair and std::size_t (which every
standard container header declares, in every libstdc++) are left out.
"""
import os
import re
import sys

# A pattern of names, and the header the standard declares them in.
DECLARED_IN = [
    (r"\b(u?int(8|16|32|64)_t|u?intptr_t)\b", "cstdint"),
    (r"\bstd::string\b", "string"),
    (r"\bstd::vector\b", "vector"),
    (r"\bstd::function\b", "functional"),
    (r"\bstd::(unique_ptr|shared_ptr|make_unique|make_shared)\b", "memory"),
    (r"\bstd::(min|max|minmax|sort|stable_sort|min_element|max_element|fill|fill_n|copy|"
     r"copy_n|find|find_if|count|count_if|reverse|clamp|all_of|any_of|none_of|lower_bound|"
     r"upper_bound|transform|equal|remove_if|unique|nth_element)\b", "algorithm"),
    (r"\bstd::array\b", "array"),
    (r"\bstd::map\b", "map"),
    (r"\bstd::set\b", "set"),
    (r"\bstd::unordered_map\b", "unordered_map"),
    (r"\bstd::unordered_set\b", "unordered_set"),
    (r"\bstd::(mutex|lock_guard|unique_lock|scoped_lock)\b", "mutex"),
    (r"\bstd::(optional|nullopt)\b", "optional"),
    (r"\bstd::(memcpy|memset|memcmp|memmove|strlen|strcmp|strncmp|strerror)\b", "cstring"),
    (r"\bstd::(printf|fprintf|snprintf|fopen|fclose|fwrite|fread|fflush|fputs|puts|"
     r"remove|rename)\b", "cstdio"),
    (r"\bstd::numeric_limits\b", "limits"),
    (r"\bstd::(runtime_error|logic_error|invalid_argument|out_of_range)\b", "stdexcept"),
    (r"\bstd::(ostringstream|istringstream|stringstream)\b", "sstream"),
    (r"\bstd::(accumulate|iota|inner_product|partial_sum)\b", "numeric"),
    (r"\bstd::atomic\b", "atomic"),
    (r"\bstd::thread\b", "thread"),
    (r"\bstd::chrono\b", "chrono"),
    (r"\bstd::(tuple|make_tuple|tuple_size)\b", "tuple"),
    (r"\bstd::(is_same_v|is_same|conditional_t|enable_if_t|integral_constant|decay_t|"
     r"remove_reference_t|is_integral_v|is_floating_point_v)\b", "type_traits"),
    (r"\bstd::initializer_list\b", "initializer_list"),
]
FOLDERS = ("engine", "kernels", "models", "apps", "tests")
EXTENSIONS = (".h", ".cuh", ".cpp", ".cu")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    texts = {}

    def text(path):
        if path not in texts:
            with open(path, errors="replace") as f:
                texts[path] = f.read()
        return texts[path]

    def resolve(name, including):
        """The project file an include names (from the root or beside the includer)."""
        for base in (root, os.path.dirname(including)):
            p = os.path.normpath(os.path.join(base, name))
            if os.path.isfile(p) and p.startswith(root + os.sep):
                return p
        return None

    reached = {}  # project file -> the external headers it includes, itself or through ours

    def external_headers(path, stack=()):
        if path in reached:
            return reached[path]
        found = set()
        for name in INCLUDE.findall(text(path)):
            mine = resolve(name, path)
            if mine is None:
                found.add(name)
            elif mine not in stack:
                found |= external_headers(mine, stack + (path,))
        reached[path] = found
        return found

    sources = []
    for folder in FOLDERS:
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            if os.sep + "cuda_emulation" + os.sep + "include" in dirpath + os.sep:
                continue  # the emulation's stand-ins for the CUDA toolkit's headers
            sources += [os.path.join(dirpath, n) for n in names if n.endswith(EXTENSIONS)]
    missing = 0
    for path in sorted(sources):
        code = COMMENT.sub("", text(path))
        have = external_headers(path)
        for pattern, header in DECLARED_IN:
            use = re.search(pattern, code)
            if use and header not in have and not (header == "cstdint" and "stdint.h" in have):
                print(f"{os.path.relpath(path, root)}: uses {use.group(0)} without <{header}>, "
                      "itself or through a header of the project's")
                missing += 1
    print(f"{len(sources)} files read, {missing} missing includes")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
