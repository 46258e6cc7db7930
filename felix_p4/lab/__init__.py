"""A Calico node in network namespaces: real pods on veth pairs around the embedded target.

`topology` builds the namespaces and links (as Calico's CNI plumbs a pod, with the pods' host
ends bound to the target), `node` runs the target and the driver in them, `felix` is what Felix
would send for those pods, `demo` is `make demo-netns`; tests/netns uses the same pieces.
"""
