"""`python -m felix_p4.lab [--engine model|dpdk]`: the network-namespace demo."""

import sys

from felix_p4.lab.demo import main

sys.exit(main())
