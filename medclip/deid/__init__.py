"""De-identification: exact-match identifiers of a study, report-text scrubbing, DICOM header de-identification.

``identifiers`` collects and normalises the identifiers a study's own sources carry (DICOM header, HL7 PID, FHIR
Patient) for exact matching; ``text`` scrubs report text with presidio pattern recognisers (no NLP model) plus those
exact matches; ``dicom`` applies the DICOM PS3.15 Basic Application Level Confidentiality Profile (via dicognito) to
instances retrieved from a PACS. See docs/deid.md.
"""
