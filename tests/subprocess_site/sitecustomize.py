# Every Python process the tests start finds this folder on PYTHONPATH (see conftest.py):
# it runs without network access, whatever the machine's network, and pauses where a
# test that interrupts it asks (pause_on_open).
import no_network
import pause_on_open

no_network.install()
pause_on_open.install()
