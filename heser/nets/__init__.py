"""The networks of HeSer, one file each (Sec. 3 and Appendix A/B of the paper)."""
