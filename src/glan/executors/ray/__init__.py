"""The Ray executor: a driver (glan.executors.ray.driver) and its workers and admission authority (glan.executors.ray.worker)."""
