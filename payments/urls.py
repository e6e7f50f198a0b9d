"""URL routes for payments, refunds, disputes, evidence files, customers and payment methods
under /api/v1/."""

from core.api import resource_urls
from payments import api

urlpatterns = [
    *resource_urls("payments", "payment_id", collection=api.PaymentCollection,
                   detail=api.PaymentDetail, confirm=api.PaymentConfirm,
                   capture=api.PaymentCapture, cancel=api.PaymentCancel,
                   increment_authorization=api.PaymentIncrementAuthorization),
    *resource_urls("refunds", "refund_id", collection=api.RefundCollection,
                   detail=api.RefundDetail),
    *resource_urls("disputes", "dispute_id", collection=api.DisputeCollection,
                   detail=api.DisputeDetail, close=api.DisputeClose, submit=api.DisputeSubmit),
    *resource_urls("files", "file_id", collection=api.FileCollection, detail=api.FileDetail,
                   contents=api.FileContents),
    *resource_urls("customers", "customer_id", collection=api.CustomerCollection,
                   detail=api.CustomerDetail),
    *resource_urls("payment_methods", "payment_method_id",
                   collection=api.PaymentMethodCollection, detail=api.PaymentMethodDetail,
                   detach=api.PaymentMethodDetach),
]
