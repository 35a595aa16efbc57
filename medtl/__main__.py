"""``python -m medtl ...`` (and ``torchrun ... -m medtl pretrain ...``): the ``medtl`` command."""
from .cli import main

if __name__ == "__main__":
    main()
