"""felix-p4: a Calico Felix dataplane driver that programs a P4 pipeline over P4Runtime."""
