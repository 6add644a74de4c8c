{{/* The image of the flanneld container. */}}
{{- define "flannel.image" -}}
{{ .Values.flannel.image.repository }}:{{ .Values.flannel.image.tag }}
{{- end -}}

{{/* The image of the init containers: flannel.flannel_cni.image, else flannel.image. */}}
{{- define "flannel.cniImage" -}}
{{- $cni := .Values.flannel.flannel_cni.image -}}
{{- if $cni.repository -}}
{{ $cni.repository }}:{{ $cni.tag | default .Values.flannel.image.tag }}
{{- else -}}
{{ include "flannel.image" . }}
{{- end -}}
{{- end -}}

{{/* net-conf.json from podCidr, podCidrv6 and the flannel.* backend values. */}}
{{- define "flannel.netConf" -}}
{{- $f := .Values.flannel -}}
{{- $conf := dict "EnableNFTables" ($f.enableNFTables | default false) -}}
{{- if .Values.podCidr -}}
{{- $_ := set $conf "Network" .Values.podCidr -}}
{{- else -}}
{{- $_ := set $conf "EnableIPv4" false -}}
{{- end -}}
{{- if .Values.podCidrv6 -}}
{{- $_ := set $conf "EnableIPv6" true -}}
{{- $_ := set $conf "IPv6Network" .Values.podCidrv6 -}}
{{- end -}}
{{- $backend := dict "Type" $f.backend -}}
{{- if eq $f.backend "wireguard" -}}
{{- if $f.backendPort }}{{ $_ := set $backend "ListenPort" (int $f.backendPort) }}{{ end -}}
{{- if $f.backendPortv6 }}{{ $_ := set $backend "ListenPortV6" (int $f.backendPortv6) }}{{ end -}}
{{- if $f.psk }}{{ $_ := set $backend "PSK" $f.psk }}{{ end -}}
{{- if $f.tunnelMode }}{{ $_ := set $backend "Mode" $f.tunnelMode }}{{ end -}}
{{- if $f.keepaliveInterval }}{{ $_ := set $backend "PersistentKeepaliveInterval" (int $f.keepaliveInterval) }}{{ end -}}
{{- else if $f.backendPort -}}
{{- $_ := set $backend "Port" (int $f.backendPort) -}}
{{- end -}}
{{- if $f.mtu }}{{ $_ := set $backend "MTU" (int $f.mtu) }}{{ end -}}
{{- if $f.vni }}{{ $_ := set $backend "VNI" (int $f.vni) }}{{ end -}}
{{- if hasKey $f "GBP" }}{{ $_ := set $backend "GBP" $f.GBP }}{{ end -}}
{{- if hasKey $f "directRouting" }}{{ $_ := set $backend "DirectRouting" $f.directRouting }}{{ end -}}
{{- if $f.macPrefix }}{{ $_ := set $backend "MacPrefix" $f.macPrefix }}{{ end -}}
{{- $_ := set $conf "Backend" $backend -}}
{{ toPrettyJson $conf }}
{{- end -}}
