"""The FUSE layer: pyfuse3 handlers over the catalog and the fill, the inode table."""
