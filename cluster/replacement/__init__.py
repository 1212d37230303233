"""Re-placement while serving: the Replacer (load, switch between two steps, drop) and the service the placement routes drive."""
