from crossctr.cli import main

main()
