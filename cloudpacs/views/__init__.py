"""The archive's pages: a study (archive), the register of exams (orders), the viewer (viewer)."""
