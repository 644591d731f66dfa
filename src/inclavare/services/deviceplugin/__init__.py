"""The EPC device plugin: kubelet's device-plugin API v1beta1, one device per MiB of EPC.

Importing the package imports nothing heavy: :mod:`.names` (what rune reads) stays free of
gRPC; :mod:`.plugin` and :mod:`.service` load grpcio when the plugin is served.
"""
