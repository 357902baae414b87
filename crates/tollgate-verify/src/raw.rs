//! Parsing a captured raw HTTP/1.1 request (CLI `verify`, fuzz targets): not implemented yet.
