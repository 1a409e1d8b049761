"""DICOMweb (PS3.18) over the archive: QIDO-RS, WADO-RS, STOW-RS, WADO-URI, and the
server-side rendering that /rendered, thumbnails and the pages' previews share."""
