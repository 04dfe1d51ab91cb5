# The broken sample modules are read as text by the page check, never imported or collected.
collect_ignore_glob = ["template_samples/*"]
