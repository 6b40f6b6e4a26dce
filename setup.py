"""Package list (the rest of the metadata is in pyproject.toml).

``optimum_subnet`` and its subpackages are found automatically (a new model family folder needs no
entry here); the CLI folder ``optimum_subnet/commands`` is installed as ``optimum.commands.subnet`` and
its ``register/`` folder as the ``optimum.commands.register`` namespace portion (see pyproject.toml).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["optimum_subnet", "optimum_subnet.*"],
                           exclude=["optimum_subnet.commands", "optimum_subnet.commands.*"])
    + ["optimum.commands.subnet", "optimum.commands.register"],
)
