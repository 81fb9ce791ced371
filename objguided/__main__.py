from objguided.cli import main

raise SystemExit(main())
