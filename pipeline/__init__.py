"""felix-p4's P4 program and the artefacts p4c builds from it, installed as package data
(`felix_p4.p4src`, found with importlib.resources). No code lives here."""
