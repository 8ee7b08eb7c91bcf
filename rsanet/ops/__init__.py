"""Spatio-temporal feature transforms: RSA (Eqs. 5-12) and the Table 2 baselines."""
