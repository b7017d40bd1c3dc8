"""The bottom layer: errors, atomic file I/O, hashing, the registry, ranks, the console, the
package version and the run folder's paths."""
