"""Ship re-identification across optical and SAR chips (TransOSS baseline and MOS)."""
