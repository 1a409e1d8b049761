"""The archive's index is written only by ingestion (cloudpacs.services), so it is not in the
Django admin: an edit here would let the index disagree with the files it describes."""
