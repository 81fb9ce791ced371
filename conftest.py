"""pytest collects the doctests of methods/ by path, so it would import those files a second time as the package
``methods`` (the folder's name) beside the installed ``objguided_methods`` (pyproject maps that folder to that
name), and every method would register twice. The folder's modules are the installed package's modules."""

import importlib
import pkgutil
import sys

import objguided_methods

sys.modules.setdefault("methods", objguided_methods)
for _info in pkgutil.iter_modules(objguided_methods.__path__):
    sys.modules.setdefault(f"methods.{_info.name}", importlib.import_module(f"objguided_methods.{_info.name}"))
