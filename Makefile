# The two set-up commands (README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GEOIP := .cache/geoip

.PHONY: demo test setup system-deps venv bench clean

demo: setup $(GEOIP)/Test-Country.mmdb
	$(VENV)/bin/egress analyze pcaps/*.pcap pcaps/*.pcapng --policy deploy/policy.example.yaml \
	  --geoip-country $(GEOIP)/Test-Country.mmdb --geoip-asn $(GEOIP)/Test-ASN.mmdb

test: setup
	scripts/install-system-deps --test
	$(PY) -m mypy
	$(PY) -m pytest -q

setup: system-deps venv

system-deps:
	scripts/install-system-deps

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(GEOIP)/Test-Country.mmdb: pcaps/make_geoip.py | venv
	$(PY) pcaps/make_geoip.py $(GEOIP) >/dev/null

bench: setup
	$(PY) bench/analyze.py

clean:
	rm -rf $(VENV) .cache bench/out
