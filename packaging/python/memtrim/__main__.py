from memtrim import main

main()
