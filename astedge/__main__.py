from astedge.cli import main

main()
