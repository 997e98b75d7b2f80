# Identity and ACLs: the shipped Mosquitto configurations with certificates
# and passwords made by deploy/pki/carehub-pki.
ch_integration_test(broker_acl broker_acl.py TIMEOUT 120)
