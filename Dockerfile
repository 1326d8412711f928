# Kagzi server image.
#   docker build --build-arg VERSION=$(git describe --always --dirty) -t kagzi .
#   docker run -p 8080:8080 -e KAGZI_DATABASE_URL=postgres://... kagzi

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, in a layer of their own: it is rebuilt only when go.mod or
# go.sum change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/kagzi ./cmd/kagzi

# Alpine rather than distroless so that the healthcheck has wget and a shell.
FROM alpine:3.20
RUN apk add --no-cache ca-certificates tzdata \
	&& addgroup -S -g 10001 kagzi \
	&& adduser -S -D -H -u 10001 -G kagzi -s /sbin/nologin kagzi
COPY --from=build /out/kagzi /usr/local/bin/kagzi
# Numeric, so that runtimes enforcing runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
# Ready means: the database answers, the schema is current and LISTEN is up.
# It assumes the default KAGZI_HTTP_ADDR (:8080).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
	CMD wget -q -O /dev/null http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["kagzi"]
CMD ["serve"]
