from glan.cli import main

main()
