"""In-process tests of the framework core (tenantry/), its job layer and the plug-in host."""
