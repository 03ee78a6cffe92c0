{
  "targets": [
    {
      "target_name": "weft-udpd",
      "type": "executable",
      "sources": ["src/backends/udp/native/weft-udpd.c"],
      "cflags": ["-O2", "-Wall"]
    },
    {
      "target_name": "weft-netlink",
      "type": "executable",
      "sources": ["src/system/native/weft-netlink.c"],
      "cflags": ["-O2", "-Wall", "-Wno-stringop-overflow"]
    },
    {
      "target_name": "weft_flock",
      "sources": ["src/system/native/flock.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
