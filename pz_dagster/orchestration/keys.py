"""Resource keys the compiled assets require (``Definitions(resources={...})``)."""

MODEL_KEY = "pz_model"
OPTIMIZER_KEY = "pz_optimizer"
EMBEDDINGS_KEY = "pz_embeddings"
STORE_KEY = "pz_store"
IO_MANAGER_KEY = "pz_io_manager"
