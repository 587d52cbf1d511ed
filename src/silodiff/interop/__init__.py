"""diffusers and peft in and out: export a trained model (or a composition) to folders they load."""

from .exporting import FORMATS, export_model, load_export

export = export_model  # the public name: ``silodiff.export(store, out, compartment=...)``

__all__ = ["FORMATS", "export", "export_model", "load_export"]
