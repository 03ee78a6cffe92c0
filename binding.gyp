{
  "targets": [
    {
      "target_name": "weft-udpd",
      "type": "executable",
      "sources": ["src/backends/udp/native/weft-udpd.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
