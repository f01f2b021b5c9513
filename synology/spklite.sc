[spklite]
title="spklite"
desc="spklite package server"
port_forward="yes"
dst.ports="@PORT@/tcp"
