"""What trainer and worker share: text encoder, network, artifact format, inference, registry."""
