"""Sources: the kernel's socket tables (sock_diag netlink, /proc/net) and the sysctls the views read."""
