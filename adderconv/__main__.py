"""``python -m adderconv`` (also the entry point torchrun uses: ``torchrun -m adderconv finetune ...``)."""
from adderconv.cli import main

if __name__ == "__main__":
    main()
