"""Reading and writing the raw file formats medflow ingests (DICOM, images, HDF5 containers)."""
