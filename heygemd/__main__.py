from heygemd.cli import main

raise SystemExit(main())
