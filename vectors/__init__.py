"""The FAISS index over product vectors, addressed by product id: the tagger's kNN vote and the search stores' kNN."""
