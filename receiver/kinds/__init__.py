"""One package per kind of Kubernetes object: how to read it into a view, the patches that
change it, and how its rollout is judged. Pure: dicts as the API returns them in, values
out; the strategies in ``receiver.rollback`` do the I/O. Kinds do not import each other."""
