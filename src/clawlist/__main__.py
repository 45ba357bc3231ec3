from clawlist.cli.main import main

main()
