"""``python -m bigmodel.commands.bench`` (and the old ``python -m bigmodel.bench``)."""

from bigmodel.commands.bench import main

if __name__ == "__main__":
    main()
