"""Build script. The native extension (csrc/ -> deepresolve_captum._C) is added by the csrc work;
until then this is a pure-Python package."""
from setuptools import setup

setup()
