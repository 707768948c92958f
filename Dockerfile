# syntax=docker/dockerfile:1
#
# mcp-ratelimit-extproc: a static binary on distroless, running as non-root.
#   docker build -t mcp-ratelimit-extproc .                    # the service (default target)
#   docker build --target mcpserver -t mcp-demo-server .       # the demo MCP server

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary, so the runtime image needs no libc.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/extproc ./cmd/extproc && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/mcpserver ./test/mcpserver

# distroless has no shell and no HTTP client; compose health checks use this one
# static busybox binary (wget) instead of a larger base image.
FROM busybox:1.37-musl AS probe

# USER is numeric (distroless's nonroot is 65532): Kubernetes' runAsNonRoot can
# only verify a numeric user, and deploy/ runs the same uid.
FROM gcr.io/distroless/static-debian12:nonroot AS mcpserver
COPY --from=probe /bin/busybox /usr/local/bin/busybox
COPY --from=build /out/mcpserver /mcpserver
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/mcpserver", "--addr", ":8080"]

FROM gcr.io/distroless/static-debian12:nonroot AS extproc
COPY --from=probe /bin/busybox /usr/local/bin/busybox
COPY --from=build /out/extproc /extproc
USER 65532:65532
# 50051: ext_proc gRPC + grpc.health.v1; 8081: /metrics, /healthz, /readyz.
EXPOSE 50051 8081
ENV EXTPROC_GRPC_ADDR=:50051 EXTPROC_ADMIN_ADDR=:8081
ENTRYPOINT ["/extproc"]
