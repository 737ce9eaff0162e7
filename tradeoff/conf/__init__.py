"""Hydra configs of tradeoff, shipped as package data (a package so Hydra finds them as
`pkg://tradeoff.conf` wherever tradeoff is installed)."""
