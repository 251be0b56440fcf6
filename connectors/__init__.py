"""The connectors, one package each; a `connectors/` folder elsewhere on sys.path adds more."""

from pkgutil import extend_path

# A deployment (or a test) may put further connectors in a `connectors/` folder of its own on
# PYTHONPATH; `intake run all` and `intake connectors list` find them there too.
__path__ = extend_path(__path__, __name__)
