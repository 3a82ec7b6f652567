# syntax=docker/dockerfile:1
#
# tlslog collector image: `deno compile` in the official Deno image, then the
# single binary on a distroless glibc base, run as a non-root user.
#
# Build:
#   docker build -t tlslog .
#
# Run with certificates mounted read-only at /certs (server.crt, server.key and
# ca.crt, e.g. made by `sh certs.sh`) and the data directory at /data:
#   mkdir -p data
#   docker run -d --name tlslog --user "$(id -u):$(id -g)" \
#     -v "$PWD/certs:/certs:ro" -v "$PWD/data:/data" \
#     -p 8443:8443 -p 127.0.0.1:8080:8080 tlslog
#
# --user makes the container run as the owner of the mounted files, so it can
# read server.key (mode 0600) and write to ./data. Without --user it runs as
# uid 65532, which must then be able to read /certs/server.key and write /data
# (a named volume for /data starts out owned by 65532).
#
# The dashboard listens on 0.0.0.0 inside the container and requires a token:
# set TLSLOG_DASHBOARD_TOKEN (-e), else one is generated and printed in the
# container's log. Publish port 8080 on 127.0.0.1 only all the same, as above.
#
# The base is glibc (distroless cc), so the memory governor can hand freed
# pages back with malloc_trim (the binary is compiled with -A, FFI included).
#
# The HEALTHCHECK connects to localhost:8443 and verifies the collector against
# $TLSLOG_CA (/certs/ca.crt), so the server certificate must be valid for
# "localhost" (the one from certs.sh is) and signed by that CA.

FROM denoland/deno:2.9.6 AS build
WORKDIR /app

# Dependencies first, so that this layer is cached across source edits.
COPY deno.json deno.lock ./
RUN deno install --frozen

COPY main.ts ./
COPY cli ./cli
COPY client ./client
COPY server ./server
COPY shared ./shared
COPY dashboard ./dashboard

# Type-checks, then embeds the code and its npm dependencies in one executable.
RUN deno compile -A --frozen --output /tlslog main.ts

# Mount points, created here because the runtime image has no shell.
RUN mkdir -p /mnt/data /mnt/certs /mnt/keys


FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /tlslog /tlslog
COPY --from=build --chown=65532:65532 /mnt/data /data
COPY --from=build /mnt/certs /certs
# The checkpoint signing key: its own volume, so that a copy of /data never carries it.
COPY --from=build --chown=65532:65532 /mnt/keys /keys

USER 65532:65532
VOLUME ["/data", "/certs", "/keys"]

# Default --ca of `tlslog healthcheck`, `send` and `healthcare`.
ENV TLSLOG_CA=/certs/ca.crt

# 8443: TLS collector (protocol v1 and v2). 8080: dashboard (HTTP).
EXPOSE 8443 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/tlslog", "healthcheck"]

ENTRYPOINT ["/tlslog"]
CMD ["serve", "--cert", "/certs/server.crt", "--key", "/certs/server.key", "--data-dir", "/data", "--signing-key", "/keys/tlslog-checkpoint.key", "--dashboard-host", "0.0.0.0"]
