from learned_router.cli import main

main()
