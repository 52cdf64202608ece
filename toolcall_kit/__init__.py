"""toolcall-kit: fine-tune open-weight LLMs to call tools reliably.

Data flows left to right through the modules: formats -> validate -> prepare -> templates -> tokens ->
train -> merge -> evaluate. The CLI (`toolcall-kit`), the notebooks and the tests call the same functions.
"""

__version__ = "0.1.0"
