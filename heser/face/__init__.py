"""Face detection, landmarks, alignment/crop and semantic parsing; one backend per file."""
